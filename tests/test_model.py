from nvme_agent.topology.model import Identity, IdentitySource


def test_identity_prefers_uuid_over_everything() -> None:
    ident = Identity.derive(
        uuid="6a1b1f4e-0000-4000-8000-000000000001",
        nguid="00112233445566778899aabbccddeeff",
        eui64="0011223344556677",
        wwid="uuid.6a1b1f4e-0000-4000-8000-000000000001",
        subsysnqn="nqn.x",
        nsid=1,
    )
    assert ident.source is IdentitySource.UUID
    assert not ident.weak


def test_identity_skips_all_zero_ids_and_marks_qemu_wwid_weak() -> None:
    ident = Identity.derive(
        uuid="00000000-0000-0000-0000-000000000000",
        nguid="00000000000000000000000000000000",
        eui64=None,
        wwid="nvme.1b36-5249474354524c30-51454d55204e564d65204374726c-00000001",
        subsysnqn="nqn.2019-08.org.qemu:nvme-rig-subsys0",
        nsid=1,
    )
    assert ident.source is IdentitySource.WWID
    assert ident.weak


def test_identity_falls_back_to_nqn_and_nsid() -> None:
    ident = Identity.derive(uuid=None, nguid=None, eui64=None, wwid=None, subsysnqn="nqn.a", nsid=7)
    assert ident.source is IdentitySource.SUBSYS_NSID
    assert ident.value == "nqn.a#7"
    assert ident.weak

# What zsh's completion system offers for command lines, captured in a real interactive zsh.
#
#   zsh -f zsh_complete.zsh FPATH_DIR 'line 1' ['line 2' ...]
#
# Starts `zsh -f -i` on a pseudo-terminal (zpty) with FPATH_DIR first in $fpath and compinit
# loaded, types each line followed by TAB (complete-word) and ^X (a widget printing an end
# marker), and prints every candidate handed to compadd, one per line, then "<end>" after
# each line's candidates.  compadd is wrapped, not replaced: the real completion functions run.
zmodload zsh/zpty || exit 2
zpty z zsh -f -i
zpty -w z "unset zle_bracketed_paste; PROMPT= RPROMPT=; fpath=(${(q)1} \$fpath)"
zpty -w z 'autoload -U compinit; compinit -u -D'
zpty -w z "zstyle ':completion:*' list-grouped false; zstyle ':completion:*' insert-tab false"
# The markers are spliced ("<h""it>") so that the echo of this very definition never matches.
zpty -w z 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  local -a __hits; builtin compadd -A __hits "$@"; local r=$?
  (( $#__hits )) && print -r -l -- "<h""it>"${^__hits}
  return r
}'
zpty -w z 'zle-done() { print -r -- "<do""ne>"; }; zle -N zle-done'
zpty -w z 'bindkey "^I" complete-word; bindkey "^X" zle-done; bindkey "^U" kill-whole-line'
local line
for cmdline in "${@[2,-1]}"; do
  zpty -n -w z "$cmdline"$'\t'$'\x18'
  while zpty -r z line; do
    [[ $line == *'<done>'* ]] && break
    [[ $line == *'<hit>'* ]] && print -r -- "${${line##*<hit>}%%$'\r'*}"
  done
  print -r -- "<end>"
  zpty -n -w z $'\x15'
done
zpty -d z

"""Where the daemon reports: the journal, the event stream, the state and history files and
the service manager (sd_notify).  Nothing here decides anything."""

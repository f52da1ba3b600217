"""Operations: the control channel to a running server, backups, migrations, pruning, doctor."""

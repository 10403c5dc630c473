"""This server process's side of fan-out: its sockets, its weddings' feeds and its presence work
(docs/architecture.md, decision 0026)."""

"""geopush streams: the Faust app, its topics, tables and agents, the CLI and the dev stack."""

"""livecdn topologies: whole deployments from a TOML file, link emulation, faults, load runs with simulated players."""

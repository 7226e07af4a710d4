"""Sans-IO cores: protocols, paths, tokens and shaping over bytes, events and a clock passed in; no I/O."""

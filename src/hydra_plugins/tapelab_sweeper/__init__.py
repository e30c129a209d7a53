"""tapelab's Hydra plugins: the grid sweeper (Hydra's basic sweeper, each job's config composed once)."""

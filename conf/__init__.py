"""tapelab's configs, installed with the package as `tapelab.conf` (Hydra reads them as pkg://tapelab.conf)."""

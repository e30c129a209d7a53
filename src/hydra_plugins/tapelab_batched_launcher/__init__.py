"""tapelab's Hydra plugins: `hydra/launcher=batched`, which trains a sweep's jobs in batches."""

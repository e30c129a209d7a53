"""The training engine: members in variables, the step's graph, the compiled loop, the host side, the pool.

- `layout`: how members sit in variables (alone, stacked, stacked with shared constants);
- `state`: each member's bookkeeping (steps, status, best loss, stop rules' counters);
- `step`: the graph of one step and of a chunk's `tf.while_loop`;
- `compiled`: tracing, compiling (XLA or the plain graph, ahead in a thread), the fallback, graph export;
- `batch`: the host side: loading values, chunks, decoded rows and statuses;
- `pool`: the process's batches kept for reuse.

TensorFlow is imported by these modules' functions, not at import.
"""

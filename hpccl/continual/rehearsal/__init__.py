"""The distributed rehearsal buffer: per-rank shards in MPI windows, global one-sided sampling,
and an asynchronous front end that overlaps buffer work with training."""

"""Regional identity server (MPI): source identities, regional patients, matching, the cell."""

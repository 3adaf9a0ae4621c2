"""Regional imaging: the DICOM archive (its receiving side first: C-ECHO, C-STORE)."""

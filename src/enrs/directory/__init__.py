"""Regional directory of professionals (RPPS) and structures (FINESS), and the ROR."""

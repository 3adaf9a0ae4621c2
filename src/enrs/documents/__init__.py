"""The regional document repository (IHE MHD as profiled for France, HL7 v2 MDM/ORU, DMP feed)."""

"""Care coordination (e-parcours): the patient's care circle, and what its members share."""

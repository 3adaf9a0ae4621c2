"""Patient matching: comparisons, the Fellegi–Sunter model as data, the matchers."""

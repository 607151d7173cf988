"""How it is shown: self-contained HTML efficiency reports built from result files."""

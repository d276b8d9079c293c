"""selfinstruct: grow an instruction dataset from human seeds with a local causal LM."""

__version__ = "0.1.0"

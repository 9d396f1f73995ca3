"""Getting observations in: reading landed files, refusing bad rows with a reason, registering series."""

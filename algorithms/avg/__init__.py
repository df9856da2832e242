"""`avg`: the mean of a numeric column of a CSV database, alone or federated over several nodes."""

"""What a stack is: typed config, model catalog, GPU plan and CLI. Imports no provider SDK."""

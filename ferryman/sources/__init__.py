"""Where data comes from: the Source protocol and its implementations."""

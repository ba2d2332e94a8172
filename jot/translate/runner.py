"""Placeholder replaced below."""
def run(config, workdir):
    raise NotImplementedError

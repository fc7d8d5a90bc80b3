"""vlpipe's command-line stages (installed as ``vlpipe.stages``): one thin Typer module each."""

"""Placeholder until the stage lands."""
import typer

app = typer.Typer()

"""The `flts` command."""

import typer

from flts.stack.cli import app as stack_app

app = typer.Typer(help="FLTS: a Kafka-driven forecasting pipeline.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")

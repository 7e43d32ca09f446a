"""SQL that only PostgreSQL runs, for the migrations that need it (partial and expression indexes, search tables).
The embedded SQLite mode skips it: its search reads step text directly and it builds OTLP traces whole. Not a
migration itself: the loader skips modules whose names start with an underscore."""


def on_postgresql(statements: list[str]):
    """A ``RunPython`` function that executes ``statements`` on PostgreSQL and does nothing elsewhere."""

    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return run

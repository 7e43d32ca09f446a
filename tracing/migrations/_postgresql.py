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


# PostgreSQL compresses a value over ~2 kB before storing it, with pglz unless told otherwise. pglz was a fifth of
# the server's time importing many small traces (issue 19: step text, agents' system prompts); lz4 compresses several
# times faster for a slightly larger result. Servers built without lz4 (rare since PostgreSQL 14) keep pglz.
LZ4_SUPPORTED = "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"


def compress_with(method: str, columns: dict[str, list[str]]):
    """A ``RunPython`` function that sets the compression of these columns (table -> columns) to ``method`` ("lz4"
    or "pglz"), on PostgreSQL servers that have lz4; elsewhere it does nothing. Only values written afterwards are
    compressed the new way: nothing is rewritten."""

    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(LZ4_SUPPORTED)
            if cursor.fetchone() is None:
                return
        quote = schema_editor.quote_name
        for table, names in columns.items():
            changes = ", ".join(f"ALTER COLUMN {quote(c)} SET COMPRESSION {method}" for c in names)
            schema_editor.execute(f"ALTER TABLE {quote(table)} {changes}")

    return run

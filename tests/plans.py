"""The query plan PostgreSQL would choose when it may not read a whole table or walk one index row by row: the plan
tests assert which indexes (bitmap scans) serve a query."""

from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet


def explain(query: str | QuerySet, params=None) -> str:
    if isinstance(query, QuerySet):
        query, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + query, params)
        return "\n".join(row[0] for row in cursor.fetchall())

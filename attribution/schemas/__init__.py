"""The error-schema cache: recurring failure patterns distilled from verified cases, retrieved for new traces by
the ``schema_guided`` method, curated by owners, and defended against poisoning (see ``services``)."""

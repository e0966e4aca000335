"""The match report: figures and an offline HTML page per target, and an index page."""

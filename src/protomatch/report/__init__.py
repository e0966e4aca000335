"""The match report: figures and an offline HTML page per target, and an index page.

``data`` holds what a report shows (:class:`~protomatch.report.data.MatchReportData`), the
display floor of the log stretch and the number formatting; ``figures`` draws the figures and
``html`` writes the pages. Each module imports only those before it in this list.
"""

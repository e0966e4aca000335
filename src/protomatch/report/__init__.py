"""The match report: figures and an offline HTML page per target, and an index page.

``data`` holds what a report shows (:class:`~protomatch.report.data.MatchReportData`), the
display floor of the log stretch and the number formatting; ``observed`` draws the observation
on its own grid, ``images`` the target beside its best matches, ``figures`` the other figures
and ``html`` writes the pages. Each module imports only those before it in this list.
"""

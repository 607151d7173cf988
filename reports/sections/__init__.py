"""One module per report section; each `build(rs, ok_points)` returns the dict its template reads."""

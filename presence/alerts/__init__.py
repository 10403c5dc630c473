"""Wedding-day alerts (issue 5, part 5): rules over presence and the plan (``rules``), their reads
(``selectors``) and writes (``services``), run by the beat task in presence/tasks.py."""

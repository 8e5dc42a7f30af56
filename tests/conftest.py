"""pytest configuration for tests/."""

# tests/fixtures holds input files for the tests (e.g. a tiny notebook for the student-edition
# tests): they are data, not tests, so nbval must not collect them.
collect_ignore = ["fixtures"]

"""The exercises' checkers: `runner` says what is wrong with a learner's function; `chNN` holds
chapter NN's `check_*` functions, which the notebooks import (`from course.exercises.ch01 import
check_q_sample`).

May import: anything of the package, inside the checkers (so that importing a chapter stays light).
"""

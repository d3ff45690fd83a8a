"""Autograded course assignments built from the chapters' graded exercises.

The chapters are the one source of truth: a graded exercise is a markdown cell with a
``sphinx-exercise`` block and its solution (a ``python`` fence with otter's
``# BEGIN SOLUTION`` / ``# END SOLUTION``), followed by test cells tagged
``tests-public`` or ``tests-hidden`` (and ``remove-cell``, ``nbval-skip`` and
``skip-execution``, so the book neither shows nor executes them).
:mod:`assignments.generate` turns them into otter-grader master notebooks;
:mod:`assignments.build` runs otter assign, checks every question and writes the
instructor's README (``make assignments``).
"""

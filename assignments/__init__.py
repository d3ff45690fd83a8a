"""Autograded course assignments built from the chapters' graded exercises.

The chapters are the one source of truth: a graded exercise is a ``sphinx-exercise``
block followed by a gated solution (``{solution-start}`` ... ``{solution-end}``) whose
code cell is tagged ``solution`` and by test cells tagged ``tests-public`` or
``tests-hidden`` (and ``remove-cell``, so the book does not show them).
:mod:`assignments.generate` turns them into otter-grader master notebooks;
:mod:`assignments.build` runs otter assign, checks every question and writes the
instructor's README (``make assignments``).
"""

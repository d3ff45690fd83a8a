"""Reading and writing astronomical data files.

* ``phbook.io.pff``      the PANOSETI file format: frames, headers, times, names
* ``phbook.io.archive``  run folders and archives of PFF files, their configuration
"""

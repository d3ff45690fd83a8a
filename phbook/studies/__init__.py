"""A chapter's whole experiment, used by both the chapter and its bench script.

* :mod:`phbook.studies.beta_vaes`      chapters 3 and 4: the book's three beta-VAEs
  (``bench/vae.py``)
* :mod:`phbook.studies.contamination`  chapter 6: GAN-based detectors trained on
  contaminated data (``bench/gan.py``)
* :mod:`phbook.studies.benchmark`      chapter 9: every detector on one simulated
  benchmark (``bench/benchmark.py``)
* :mod:`phbook.studies.lensing_gan`    chapter 10: the seed proposal's GAN trained on
  contaminated lenses (``bench/case_studies.py``)
* :mod:`phbook.studies.chase`          chapter 11: the CHASE study of Huijse et al.
  (``bench/case_studies.py``)
* :mod:`phbook.studies.mergers`, :mod:`phbook.studies.galaxy_sims`  chapter 12:
  mergers, simulation against observation, generation
"""

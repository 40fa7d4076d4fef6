"""After training: a stored run's model applied to a corpus (``kubetune predict``)."""

"""Many machines, one trustcam: Ray places one actor per camera on nodes that offer a ``camera`` resource and
restarts it elsewhere when its node dies; the camera lease in the shared database (``storage/leases.py``) makes sure
only one copy ever records and raises events. Ray is an optional extra: ``pip install 'trustcam[cluster]'``."""

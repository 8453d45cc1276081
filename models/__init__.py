"""The integrated models of the Serket tutorials, one file each (installed as ``serket_pyro.models``)."""

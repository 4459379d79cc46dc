"""Small helpers shared by the layers above the protocol (logging lives in ``utils.log``)."""

"""The head end's side of the link: the reference receiver and the command sender; the wire contract only."""

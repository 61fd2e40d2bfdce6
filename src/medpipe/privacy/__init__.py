"""Privacy: the identifying DICOM attributes (identifiers), the identifier scan
(`python -m medpipe.privacy scan`, scanning) and de-identified copies (deidentifying)."""

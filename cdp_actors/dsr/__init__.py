"""Data subject requests (OpenDSR v1/v2/v3, https://docs.mparticle.com/developers/apis/dsr-api/v3/): the request
model (`model.py`), the steps that fulfil a request against the runtime's storage and partners (`fulfil.py`)."""

"""`ftlab.serve`: a trained checkpoint behind HTTP on LitServe (dynamic batching, workers per device), with
the page `GET /` to try it in a browser. The inference is `ftlab.inference.prediction`'s, as in
`ftlab.predict`."""

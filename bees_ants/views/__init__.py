"""What the app shows, as plain values: markdown strings, tables, curves as SVG, gallery items.

Built from jobs, import reports, checkpoint metadata, predictions and evaluations only, so the
Gradio layer (bees_ants.ui) stays wiring and these stay testable: none of them imports gradio.
One module per part of the app:
  training     the Train tab's job view: status, dataset scan, epoch table, live curves, result
  datasets     your own dataset: the Train tab's zip upload and the dataset builder
  predictions  the Predict tab: galleries, per-file table, unreadable files
  evaluation   the Evaluate & export tab: a saved model, an evaluation, how to use a download
  comparison   the Compare tab: runs side by side
  plots        the SVG plot engine the training, evaluation and comparison curves are drawn with
  common       what several use: durations, skipped files, thumbnails
Matplotlib figures (confusion matrix, the Hub card's curves) are in bees_ants.figures, below the
views, as hub.py uses them too; how a training mode reads (mode_text) is in bees_ants.config.
"""

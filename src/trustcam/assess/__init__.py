"""``trustcam assess``: how reliable is the pipeline here, at night, in fog, against someone fooling it?

datasets (labelled images and video) → runner (the exact pipeline, under conditions and attacks) →
metrics → report (metrics.json + report.html).
"""

"""livecdn edge node (pull-on-miss back-to-source): see issue 3."""

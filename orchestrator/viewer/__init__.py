"""`headforge view`: a result folder on a local web page (three.js; assets from npm, served from disk).

    result.py   what a folder holds that the page shows (the manifest)
    server.py   the loopback HTTP server: the page, the vendored npm assets, the folder's files
    job.py      a job's artifacts fetched into a cache folder, for a JOB_ID
    static/     the page (index.html, viewer.js, viewer.css)
"""

"Worked applications: each module is exported from one chapter notebook (07 and up)."

"""Face identification: a gallery of enrolled faces (``make enroll``) and search in it (``make identify``).

    from recognition import Gallery, load_gallery
    gallery = load_gallery("build/gallery")              # gallery.npz, or the folder holding it
    found = gallery.search(vectors, k=5)                 # the 5 nearest enrolled faces of each query vector
    best = gallery.best_identities(vectors, k=2)         # the best two people (a person counts once)
"""

from recognition.gallery import Gallery, GalleryError, Matches, load_gallery

__all__ = ["Gallery", "GalleryError", "Matches", "load_gallery"]

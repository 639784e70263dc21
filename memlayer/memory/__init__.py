"""Memory: recalling what a user said and saved, and assembling it into what the responder sees."""
